"""physinv.relight"""
