#!/usr/bin/env bash
# Best effort: give Mitsuba's llvm_ad_rgb variant a libLLVM it can use (>= 17; 16 aborts on
# fminimum with drjit 1.5). physinv falls back to scalar_rgb when none is found, so failure is fine.
set -u
ls /usr/lib/x86_64-linux-gnu/libLLVM.so.19* /usr/lib/*/libLLVM-1[7-9]*.so* >/dev/null 2>&1 && exit 0
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "install-llvm: skipped (not root or no apt-get); Mitsuba will use scalar_rgb"; exit 0; }
(apt-get install -y -q libllvm19 >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libllvm19 >/dev/null 2>&1; }) \
  && echo "install-llvm: libllvm19 installed" || echo "install-llvm: libllvm19 not available; Mitsuba will use scalar_rgb"
exit 0
