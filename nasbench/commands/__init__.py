"""Further ``nas`` commands: each module registers its commands on :data:`nasbench.cli.app`.

Every module of this package is imported by :mod:`nasbench.cli`, so a new command group is one new file.
"""
