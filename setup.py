"""CareHub packaging: `pip install .` gives the `carehub` command; `pip install .[test]` the test tools."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "hub" / "__init__.py").read_text(), version)

setup(
    name="carehub",
    version=version["__version__"],
    description="Home hub for an elderly resident living alone: bed sensor, watch, panel, local alerts, durable sync",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["hub", "hub.*", "drivers", "drivers.*", "offline_queue", "offline_queue.*"]),
    install_requires=[
        "gpiozero>=2.0,<3",
        "pyserial>=3.5,<4",
        # bleak's API moves between majors; pin the version the watch driver was tested with.
        "bleak==3.1.0",
        # Home Assistant's connect-with-retries for BlueZ; 4.7.1 is the release tested with bleak 3.1.0.
        "bleak-retry-connector==4.7.1",
        # No sqlite-utils: every query lives in offline_queue/ on the stdlib's sqlite3, which gives
        # the explicit transactions and PRAGMAs (synchronous=FULL, quick_check) the store needs.
        # sqlite-utils would bring eight more packages (click, tabulate, dateutil, pip...) onto the Pi.
        "requests>=2.31,<3",
        # requests' own transport: the uploader streams reply bodies from it (and maps its errors)
        "urllib3>=1.26,<3",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-timeout>=2.3,<3",
            "hypothesis>=6.100,<7",
            # the receiver is checked against docs/openapi.yaml
            "jsonschema>=4.18,<5",
            "PyYAML>=6,<7",
            # the OpenAPI fuzzer run against the receiver (4.x API; pinned, it moves fast)
            "schemathesis==4.32.5",
            # a private CA and server certificates for the hub's TLS tests
            "trustme==1.2.1",
            # the power-cut tests' FUSE file system over Debian's libfuse3 (fuse3); pinned: its
            # ctypes structs track libfuse's ABI release by release
            "mfusepy==3.1.1",
        ],
        "bench": ["persist-queue==1.1.0"],
    },
    entry_points={"console_scripts": ["carehub=hub.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Operating System :: POSIX :: Linux",
    ],
)
