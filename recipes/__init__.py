"""The shipped training recipes, one YAML file per method; installed as the package data ``meid_bench.recipes``."""
