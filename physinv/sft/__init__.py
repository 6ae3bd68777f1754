"""physinv.sft"""
