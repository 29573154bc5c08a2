"""A propagation split into shards (one per process or machine) and the merge that makes them one output.

Shard ``rank`` of ``world_size`` takes the images at positions ``rank, rank + world_size, ...`` of the sorted image
list and writes ``<out>.shard-<rank>-of-<world_size>.json``: a COCO document like the single-process one plus a
``shard`` record (its place, its file names, a digest of the whole list). The merge puts the images back in list
order and numbers them as one process would have (image ids of a COCO input kept, the others counted from
``first_new_id``; annotation ids from 1), so the merged file is byte for byte the single-process output.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ..errors import CorrmarkError
from ..formats import label_studio_tasks
from ..io import write_json_atomic
from .output import mean_score

SHARD_NAME = re.compile(r"\.shard-(\d+)-of-(\d+)\.json$")


def shard_path(out_path, rank: int, world_size: int) -> Path:
    """``<out>.shard-<rank>-of-<world_size>.json``, beside the output."""
    return Path(f"{out_path}.shard-{rank}-of-{world_size}.json")


def shard_record(file_names: list[str], rank: int, world_size: int, first_new_id: int) -> dict:
    """What a shard document records about its place: enough for the merge, which sees no images folder."""
    digest = hashlib.blake2b("\n".join(file_names).encode(), digest_size=16).hexdigest()
    return {"rank": rank, "world_size": world_size, "images": len(file_names), "list_digest": digest,
            "first_new_id": first_new_id, "file_names": file_names[rank::world_size]}


def merge_shard_documents(documents: list[dict]) -> dict:
    """The single-process COCO document of a complete set of shard documents (any order)."""
    shards = _checked(documents)
    world_size, first_new_id = len(shards), shards[0]["shard"]["first_new_id"]
    records = [_records(shard) for shard in shards]
    merged = {key: value for key, value in shards[0].items() if key != "shard"}
    images, annotations, failed = [], [], []
    next_image_id = first_new_id
    for index, file_name in enumerate(list_order(shards)):
        done, failures = records[index % world_size]
        if file_name in failures:
            failed.append(failures[file_name])
        if file_name not in done:
            continue
        image, annotation = done[file_name]
        image_id = image["id"]
        if image_id >= first_new_id:  # not an id of the COCO input: counted in list order
            image_id, next_image_id = next_image_id, next_image_id + 1
        images.append({**image, "id": image_id})
        annotations.append({**annotation, "id": len(annotations) + 1, "image_id": image_id})
    merged.update(images=images, annotations=annotations, failed=failed)
    return merged


def list_order(shards: list[dict]) -> list[str]:
    """The whole image list, in order, from checked shard documents sorted by rank."""
    world_size, total = len(shards), shards[0]["shard"]["images"]
    return [shards[index % world_size]["shard"]["file_names"][index // world_size] for index in range(total)]


def _records(shard: dict) -> tuple[dict, dict]:
    """file name -> (image, annotation) of the images done, file name -> entry of the failed ones."""
    assigned = set(shard["shard"]["file_names"])
    done = {image["file_name"]: (image, annotation) for image, annotation in zip(shard["images"],
                                                                                 shard["annotations"])}
    failures = {entry["file_name"]: entry for entry in shard["failed"]}
    return ({name: record for name, record in done.items() if name in assigned},
            {name: entry for name, entry in failures.items() if name in assigned})


def _checked(documents: list[dict]) -> list[dict]:
    """The documents sorted by rank, after checking they are the complete shards of one run."""
    if not documents:
        raise CorrmarkError("no shards to merge")
    try:
        places = [(document["shard"]["rank"], document["shard"]["world_size"]) for document in documents]
        digests = {document["shard"]["list_digest"] for document in documents}
        settings = [document["info"]["settings"] for document in documents]
        paired = all(len(document["images"]) == len(document["annotations"]) for document in documents)
    except (KeyError, TypeError):
        paired = False
    if not paired:
        raise CorrmarkError("not the shards of a corrmark propagate run (a 'shard' record and one annotation per "
                            "image are missing)")
    world_size = len(documents)
    if sorted(places) != [(rank, world_size) for rank in range(world_size)]:
        raise CorrmarkError(f"incomplete or mixed shards: got (rank, world size) {sorted(places)}, need ranks 0 to "
                            f"{world_size - 1} of one run")
    if len(digests) != 1:
        raise CorrmarkError("the shards were made from different image lists (were images added or removed "
                            "between the runs?); run them again on the same folder")
    if any(setting != settings[0] for setting in settings):
        raise CorrmarkError("the shards were made with different matchers, annotated points or keypoint names")
    return sorted(documents, key=lambda document: document["shard"]["rank"])


def write_merged(coco: dict, out_path, label_studio=None, image_url_prefix: str = "") -> None:
    write_json_atomic(out_path, coco)
    if label_studio is not None:
        write_json_atomic(label_studio, label_studio_tasks(coco, image_url_prefix))


def merge_summary(coco: dict, order: list[str], out_path) -> dict:
    """The counts of a merged document: images listed, propagated, failed, not yet attempted, mean score."""
    attempted = {image["file_name"] for image in coco["images"]} | {entry["file_name"] for entry in coco["failed"]}
    return {"out": str(out_path), "images": len(order), "propagated": len(coco["images"]),
            "failed": len(coco["failed"]), "remaining": sum(name not in attempted for name in order),
            "mean_score": mean_score(coco)}


def find_shard_files(out_path) -> list[Path]:
    """The shard files of ``out_path`` (one run: a single world size, every rank present)."""
    out_path = Path(out_path)
    found: dict[int, dict[int, Path]] = {}
    folder = out_path.parent if str(out_path.parent) else Path(".")
    for path in folder.glob(f"{glob_escape(out_path.name)}.shard-*-of-*.json"):
        match = SHARD_NAME.search(path.name)
        if match and path.name[:match.start()] == out_path.name:
            found.setdefault(int(match[2]), {})[int(match[1])] = path
    if not found:
        raise CorrmarkError(f"no shard files {out_path}.shard-RANK-of-WORLD.json found")
    if len(found) > 1:
        raise CorrmarkError(f"shard files of several runs ({', '.join(f'{w} processes' for w in sorted(found))}) "
                            f"beside {out_path}; remove the stale ones")
    (world_size, ranks), = found.items()
    missing = [str(shard_path(out_path, rank, world_size)) for rank in range(world_size) if rank not in ranks]
    if missing:
        raise CorrmarkError(f"missing shard file(s): {', '.join(missing)} (copy every shard beside {out_path.name})")
    return [ranks[rank] for rank in range(world_size)]


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def merge_shard_files(out_path, label_studio=None, image_url_prefix: str = "") -> dict:
    """Merge the shard files beside ``out_path`` (copied together from several machines) into ``out_path`` (and
    Label Studio predictions when ``label_studio`` is given). Returns the counts of the merged output."""
    documents = []
    for path in find_shard_files(out_path):
        try:
            documents.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise CorrmarkError(f"cannot read shard {path}: {error}") from None
    coco = merge_shard_documents(documents)
    write_merged(coco, out_path, label_studio, image_url_prefix)
    shards = sorted(documents, key=lambda document: document["shard"]["rank"])
    return {**merge_summary(coco, list_order(shards), out_path), "world_size": len(documents)}
