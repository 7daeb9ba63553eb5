"""The benchmarks' one list: every name reaches a function that exists, however many have run before it."""

import importlib
import types

import bench


def test_every_benchmark_reaches_its_function_after_any_module_was_imported():
    """Importing bench.x sets the package's attribute x. An accessor named x was its global x, so once one
    benchmark of a module had run, the next of that module failed (`bench producer` after `bench broker`:
    'module' object is not callable)."""
    for name in ("kafka_side", "stream_runs", "latency", "soak", "finality", "results_write"):
        importlib.import_module(f"bench.{name}")
    for name, benchmark in bench.BENCHMARKS.items():
        names = benchmark.run.__code__.co_names
        accessors = [n for n in names if isinstance(getattr(bench, n, None), types.FunctionType)
                     and n not in ("_rounds",)]
        assert accessors, f"{name}: no module accessor"
        module = getattr(bench, accessors[0])()
        assert isinstance(module, types.ModuleType), name
        assert any(callable(getattr(module, n, None)) and n.startswith("bench_") for n in names), name
