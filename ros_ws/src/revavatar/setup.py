"""ament_python package that also installs with plain ``pip install -e``."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "revavatar"
HERE = Path(__file__).resolve().parent


def _share(folder: str, pattern: str) -> list[str]:
    # launch/ and calibration/ are symlinks to the project root's folders, so the installed
    # package carries the same launch file and YAMLs that the embedded runner reads.
    return sorted(str(p.relative_to(HERE)) for p in (HERE / folder).glob(pattern))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", _share("launch", "*.launch.py")),
        (f"share/{PACKAGE}/calibration", _share("calibration", "*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="RevAvatar developers",
    description="Reverse pass-through for VR headsets",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "revavatar = revavatar.cli:main",
            "camera_node = revavatar.nodes.camera_node:main",
            "alignment_node = revavatar.nodes.alignment_node:main",
            "restoration_node = revavatar.nodes.restoration_node:main",
            "display_node = revavatar.nodes.display_node:main",
        ],
    },
)
