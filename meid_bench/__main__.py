"""`python -m meid_bench` is the `meid-bench` command."""

from meid_bench.cli import main

main(prog_name="meid-bench")
