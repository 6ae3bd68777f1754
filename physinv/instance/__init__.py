"""physinv.instance"""
