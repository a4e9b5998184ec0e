import os
from glob import glob

from setuptools import find_packages, setup

package_name = "seg_perception"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    # Files the node needs at run time (default model, label files, DDS profile) live inside the
    # Python package, so a pip install and a colcon install find them the same way.
    package_data={package_name: ["data/models/*", "data/labels/*.yaml", "data/*.xml", "data/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        (os.path.join("share", package_name), ["package.xml"]),
        (os.path.join("share", package_name, "launch"), glob("launch/*.launch.py")),
        (os.path.join("share", package_name, "config"), glob("config/*.yaml")),
        (os.path.join("share", package_name, "rviz"), glob("rviz/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="seg_perception maintainers",
    maintainer_email="seg-perception@example.com",
    description="Camera semantic segmentation node: road, pedestrian and parking masks, "
                "overlay and a drivable-area occupancy grid (TensorRT / ONNX Runtime / PyTorch).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "camera_seg_node = seg_perception.ros.node:main",
            "camera_seg_lifecycle_node = seg_perception.ros.lifecycle_node:main",
            "seg-perception = seg_perception.tools.cli:main",
        ],
    },
)
