"""bench/compare as a Python module, for the tools that reuse its servers, load and CPU
accounting as they are (bench/ab-cpu, bench/timeline): the script has no .py name to import."""
import importlib.machinery
import importlib.util
import os


def load_compare():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare")
    loader = importlib.machinery.SourceFileLoader("compare", path)
    spec = importlib.util.spec_from_loader("compare", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
