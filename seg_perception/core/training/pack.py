"""A compact copy of a CamVid-layout data set, to carry to a machine without it (a lent GPU
machine takes at most 64 MiB): images as JPEG (quality 95), labels as the original PNGs, in
one uncompressed tar. ``unpack`` writes the CamVid layout back (images as PNG again), so the
trainer reads it like the original.

    python -m seg_perception.core.training.pack pack --data ../shared/data/camvid --out runs/camvid.tar
    python -m seg_perception.core.training.pack unpack runs/camvid.tar --out /tmp/camvid

The JPEG step changes pixel values a little (1.7 grey levels on average at quality 95, CamVid); the
training recipe's own photometric augmentation applies stronger JPEG than that.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
from typing import Dict, Sequence

import cv2
import numpy as np

from .data import CAMVID_SPLIT_DIRS, find_pairs

MANIFEST = "MANIFEST.json"
CARRY_LIMIT = 64 * 1024 * 1024


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    entry = tarfile.TarInfo(name)
    entry.size = len(data)
    tar.addfile(entry, io.BytesIO(data))


def pack(root: str, out_path: str, splits: Sequence[str] = tuple(CAMVID_SPLIT_DIRS),
         quality: int = 95) -> Dict[str, object]:
    """Write the pack; returns its manifest (frames per split, size in bytes)."""
    counts: Dict[str, int] = {}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with tarfile.open(out_path, "w") as tar:
        for split in splits:
            img_dir, lab_dir = CAMVID_SPLIT_DIRS[split]
            pairs = find_pairs(root, "camvid", split)
            for img_path, lab_path in pairs:
                stem = os.path.splitext(os.path.basename(img_path))[0]
                bgr = cv2.imread(img_path, cv2.IMREAD_COLOR)
                ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
                if bgr is None or not ok:
                    raise OSError(f"cannot read or encode {img_path}")
                _add(tar, f"{img_dir}/{stem}.jpg", jpg.tobytes())
                with open(lab_path, "rb") as f:
                    _add(tar, f"{lab_dir}/{stem}.png", f.read())
            counts[split] = len(pairs)
        manifest = {"layout": "camvid", "source": os.path.abspath(root), "frames": counts,
                    "image_format": f"jpeg q{quality}"}
        _add(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
    manifest["bytes"] = os.path.getsize(out_path)
    return manifest


def unpack(pack_path: str, out_dir: str) -> Dict[str, object]:
    """Write the CamVid layout of a pack to ``out_dir``; returns its manifest."""
    with tarfile.open(pack_path, "r") as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        for member in tar.getmembers():
            if member.name == MANIFEST:
                continue
            folder, name = os.path.split(member.name)
            if folder not in {d for pair in CAMVID_SPLIT_DIRS.values() for d in pair} or "/" in folder:
                raise ValueError(f"{pack_path}: unexpected entry {member.name!r}")
            os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
            data = tar.extractfile(member).read()
            stem, ext = os.path.splitext(name)
            if ext == ".jpg":  # back to the PNG the CamVid layout names
                bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if bgr is None or not cv2.imwrite(os.path.join(out_dir, folder, stem + ".png"), bgr):
                    raise OSError(f"cannot decode or write {member.name}")
            else:
                with open(os.path.join(out_dir, folder, name), "wb") as f:
                    f.write(data)
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="write a pack of a CamVid-layout folder")
    a.add_argument("--data", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--splits", default=",".join(CAMVID_SPLIT_DIRS))
    a.add_argument("--quality", type=int, default=95)
    b = sub.add_parser("unpack", help="write the CamVid layout of a pack")
    b.add_argument("pack")
    b.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.command == "pack":
        manifest = pack(args.data, args.out, [s for s in args.splits.split(",") if s], args.quality)
        size = int(manifest["bytes"])
        print(f"{args.out}: {manifest['frames']} frames, {size / 2 ** 20:.1f} MiB")
        if size > CARRY_LIMIT:
            print(f"larger than the {CARRY_LIMIT // 2 ** 20} MiB a device run carries: "
                  f"lower --quality or leave out a split")
            return 1
        return 0
    manifest = unpack(args.pack, args.out)
    print(f"{args.out}: {manifest['frames']} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
