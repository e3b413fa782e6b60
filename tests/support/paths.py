"""Where the tests find the checkout, its fixtures and the shared datasets."""
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
TEST_DATA = REPO / "tests" / "data"
SAMPLES = REPO / "samples" / "photos"
SHARED = REPO.parent / "shared" / "datasets"


def load_tool(name: str):
    """tools/<name>.py as a module (tools/ is scripts, not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # a tool's dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
