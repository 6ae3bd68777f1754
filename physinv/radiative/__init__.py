"""physinv.radiative"""
