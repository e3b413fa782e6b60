"""altbeam's package layout for setuptools (metadata lives in pyproject.toml).

One distribution, one import namespace: the folders pipelines/, model/ and schemas/
import as `altbeam.pipelines`, `altbeam.model` and `altbeam.schemas` (package_dir maps
them), so a user's own `model/` folder never shadows ours. Beam's
`--setup_file ./setup.py` ships it to Dataflow workers as is.
"""
from setuptools import find_packages, setup

FOLDERS = ("pipelines", "model", "schemas")  # each imports as altbeam.<folder>

setup(
    packages=[f"altbeam.{name}" for folder in FOLDERS
              for name in (folder, *find_packages(where=".", include=[f"{folder}.*"]))],
    package_dir={f"altbeam.{folder}": folder for folder in FOLDERS},
    package_data={"altbeam.model": ["default/*", "default/**/*"],
                  "altbeam.model.data": ["*.tsv", "*.npz"],  # concept words, ImageNet map, detectors
                  "altbeam.model.evaluation": ["*.tsv"],    # COCO object words (CHAIR)
                  "altbeam.pipelines.writeback": ["altbeam_xmp.config"]},
    include_package_data=True,
)
