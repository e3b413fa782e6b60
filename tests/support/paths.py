"""Where the tests find the checkout, its fixtures and the shared datasets."""
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
TEST_DATA = REPO / "tests" / "data"
SAMPLES = REPO / "samples" / "photos"
SHARED = REPO.parent / "shared" / "datasets"
