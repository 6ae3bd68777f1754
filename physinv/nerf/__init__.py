"""physinv.nerf"""
