"""The shipped split references (ids and content hashes, no labels); installed as ``meid_bench.references``."""
