"""physinv.synth"""
