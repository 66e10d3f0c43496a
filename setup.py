"""sslframe: self-supervised pretraining of vision models, from a laptop CPU to SLURM clusters."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="sslframe",
    version="0.1.0",
    description="Self-supervised pretraining of vision models at scale (SwAV, SimCLR, ...)",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["sslframe", "sslframe.*", "launch", "launch.*"]),
    install_requires=[
        "torch>=2.4,<2.15",
        "torchvision>=0.19,<0.30",
        "hydra-core>=1.3,<1.4",
        "omegaconf>=2.3,<2.5",
        "numpy>=1.24",
        "pillow>=9.0",
        "timm>=1.0",
        "tensorboard>=2.14",
        "submitit>=1.5",
        "tqdm>=4.60",
        "safetensors>=0.4",
        "matplotlib>=3.7",
        "webdataset>=0.2.86,<2",
        "fsspec>=2023.1",
        # tools/curate.py: nearest neighbours and k-means (faiss-gpu works as well where installed).
        "faiss-cpu>=1.8",
    ],
    # bench: the peer measured by bench/ (never a runtime dependency). `make bench-deps` installs it
    # with --no-deps: its own requirements would pull pytorch_lightning and could replace torch.
    # fairscale: not a dependency. Its FSDP (VISSL's and SEER's) is unmaintained since 2022 and
    # allocates its buffers on CUDA even for CPU modules; distributed.strategy=fsdp (PyTorch's FSDP2)
    # shards the same way. The extra is for scripts that still import it; sslframe never does.
    entry_points={"console_scripts": ["sslframe=sslframe.command:main"]},
    extras_require={
        # The trackers are optional (logger=[mlflow,wandb]); the tests use the real libraries.
        "dev": ["pytest>=8", "pytest-xdist>=3", "ruff>=0.6", "mlflow-skinny>=3", "wandb>=0.18", "onnx", "onnxruntime"],
        "onnx": ["onnx", "onnxruntime"],
        "mlflow": ["mlflow-skinny>=3"],
        "wandb": ["wandb>=0.18"],
        "bench": ["lightly>=1.5,<2"],
        "fairscale": ["fairscale>=0.4.13"],
    },
)
