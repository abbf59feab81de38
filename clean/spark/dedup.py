"""gptlab's MinHash LSH deduplication as a Spark job: the same result as `gptlab clean dedup`.

Each partition of records streams through the `gptlab-clean` binary with `RDD.pipe` (`sign`:
parse, exact hash, shingles and MinHash signature; `annotate`: the removed records' lines), so
the hashing is gptlab's own Rust code inside the executors. Spark does the rest: the band slices
of the signatures are keys, records sharing a key are candidates (linked to the key's first
record, or verified by exact Jaccard with --verify), exact copies link to their first, connected
components come from the large-star/small-star iteration, and each component keeps its first
record in input order (files by path, then line).

Locally:    python clean/spark/dedup.py --input DIR --out OUT            (local[*])
On a cluster: spark-submit --master URL --files target/release/gptlab-clean \
                  clean/spark/dedup.py --worker ./gptlab-clean --input hdfs://... --out hdfs://...
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINE_BITS = 32  # a record's key: file index << LINE_BITS | line number


class InputError(Exception):
    """Bad input or arguments: reported as one line, exit status 1."""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="a JSONL file or a folder of them (local path or Hadoop URL)")
    p.add_argument("--out", required=True, help="output folder: kept.jsonl, removed.jsonl, stats.json")
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--num-perm", type=int, default=128)
    p.add_argument("--ngram", type=int, default=5)
    p.add_argument("--field", default="text")
    p.add_argument("--id-field", default="id")
    p.add_argument("--verify", action="store_true", help="keep only candidate pairs whose exact Jaccard reaches the threshold")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--worker", default=str(REPO / "target/release/gptlab-clean"),
                   help="the gptlab-clean binary as executors see it (on a cluster: ship it with --files and give ./gptlab-clean)")
    p.add_argument("--master", default=None, help="Spark master when not run by spark-submit (default local[*])")
    p.add_argument("--partitions", type=int, default=None, help="minimum partitions per input file")
    return p.parse_args(argv)


def is_local(path):
    return "://" not in path or path.startswith("file://")


def local_path(path):
    return path[len("file://"):] if path.startswith("file://") else path


def list_inputs(sc, path):
    """The input's JSONL files in gptlab's order: the file itself, or every *.jsonl below the
    folder sorted by path components (as Rust's `PathBuf` sorts)."""
    if is_local(path):
        p = local_path(path)
        if os.path.isfile(p):
            return [p]
        if not os.path.isdir(p):
            raise InputError(f"{p} does not exist")
        files = [os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs if f.endswith(".jsonl")]
        files.sort(key=lambda f: Path(f).parts)
    else:
        jvm = sc._jvm
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        fs = hpath.getFileSystem(sc._jsc.hadoopConfiguration())
        if not fs.exists(hpath):
            raise InputError(f"{path} does not exist")
        if fs.getFileStatus(hpath).isFile():
            return [path]
        it, files = fs.listFiles(hpath, True), []
        while it.hasNext():
            f = it.next().getPath().toString()
            if f.endswith(".jsonl"):
                files.append(f)
        files.sort(key=lambda f: f.split("/"))
    if not files:
        raise InputError(f"{path} holds no .jsonl files")
    for f in files:
        if "\t" in f or "\n" in f:
            raise InputError(f"{f}: paths with tabs or newlines are not supported")
    return files


def read_records(sc, files, partitions):
    """(key, (path:line, line)) for every non-blank line, keys increasing in input order."""
    rdds = []
    for i, f in enumerate(files):
        uri = f if not is_local(f) else "file://" + os.path.abspath(local_path(f))
        lines = sc.textFile(uri, partitions) if partitions else sc.textFile(uri)
        rdds.append(
            lines.zipWithIndex()
            .filter(lambda li: li[0].strip() != "")
            .map(lambda li, i=i, f=f: ((i << LINE_BITS) | (li[1] + 1), (f"{f}:{li[1] + 1}", li[0])))
        )
    return sc.union(rdds)


def connected_components(edges, parts):
    """(node, least node of its component) for every node on an edge but its component's least,
    by the large-star/small-star iteration (Kiveris et al. 2014), as text-dedup runs it."""

    def large_star(group):
        node, nbrs = group
        least = min(nbrs | {node})
        return [(n, least) for n in nbrs if n > node]

    def small_star(group):
        node, nbrs = group
        least = min(nbrs | {node})
        return [(n, least) for n in nbrs | {node} if n != least]

    as_sets = lambda rdd: rdd.groupByKey(parts).mapValues(set)
    while True:
        large = as_sets(edges.flatMap(lambda e: [e, (e[1], e[0])])).flatMap(large_star).distinct(parts).cache()
        small = as_sets(large.map(lambda e: (e[0], e[1]) if e[1] <= e[0] else (e[1], e[0]))) \
            .flatMap(small_star).distinct(parts).cache()
        changed = large.subtract(small, parts).union(small.subtract(large, parts)).count()
        edges = small
        if changed == 0:
            return edges


def bucket_edges(members, verify, threshold):
    """A bucket's candidate edges: to its first record, or every verified earlier-later pair."""
    members = sorted(members)
    if not verify:
        return [(members[0][0], k) for k, _ in members[1:]]
    out = []
    for a in range(len(members)):
        for b in range(a + 1, len(members)):
            (j, sj), (k, sk) = members[a], members[b]
            inter = len(sj & sk)
            union = len(sj) + len(sk) - inter
            if (inter / union if union else 1.0) >= threshold:
                out.append((j, k))
    return out


def write_lines(sc, rdd, out, name, parts):
    """The lines of `rdd` (key, line), in key order: local outputs become one OUT/name file
    (written beside and renamed), cluster outputs a folder of Spark part files."""
    ordered = rdd.sortByKey(numPartitions=parts).values()
    if not is_local(out):
        ordered.saveAsTextFile(f"{out}/{name.removesuffix('.jsonl')}")
        return
    out = local_path(out)
    folder = os.path.join(out, f"_{name}.parts")
    ordered.saveAsTextFile("file://" + os.path.abspath(folder))
    tmp = os.path.join(out, name + ".tmp")
    with open(tmp, "wb") as w:
        for part in sorted(p for p in os.listdir(folder) if p.startswith("part-")):
            with open(os.path.join(folder, part), "rb") as r:
                w.write(r.read())
    os.replace(tmp, os.path.join(out, name))
    shutil.rmtree(folder)


def write_text(sc, out, name, text):
    if is_local(out):
        p = os.path.join(local_path(out), name)
        with open(p + ".tmp", "w") as f:
            f.write(text)
        os.replace(p + ".tmp", p)
        return
    jvm = sc._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(f"{out}/{name}")
    stream = hpath.getFileSystem(sc._jsc.hadoopConfiguration()).create(hpath, True)
    stream.write(bytearray(text.encode()))
    stream.close()


def run(args, sc):
    if not 0 < args.threshold < 1:
        raise InputError(f"--threshold must be in (0, 1), got {args.threshold}")
    if args.num_perm < 2 or args.ngram < 1:
        raise InputError("--num-perm must be at least 2 and --ngram at least 1")
    bands_cmd = [args.worker, "bands", "--threshold", str(args.threshold), "--num-perm", str(args.num_perm)]
    try:  # on an executor, where the worker is shipped
        bands, rows = map(int, sc.parallelize([""], 1).pipe(shlex.join(bands_cmd), checkCode=True).first().split())
    except Exception as e:
        raise InputError(f"cannot run the worker {args.worker} on the executors (build it: cargo build --release "
                         f"-p gptlab-clean; on a cluster ship it with --files): {str(e).splitlines()[0]}")
    files = list_inputs(sc, args.input)
    start = time.time()

    records = read_records(sc, files, args.partitions).cache()
    parts = records.getNumPartitions()  # every shuffle keeps the input's parallelism
    flags = ["--threshold", str(args.threshold), "--num-perm", str(args.num_perm), "--ngram", str(args.ngram),
             "--field", args.field, "--id-field", args.id_field, "--seed", str(args.seed), "--threads", "1"]
    worker = shlex.join([args.worker, "sign", *flags, *(["--verify"] if args.verify else [])])
    signed = records.map(lambda kr: f"{kr[0]}\t{kr[1][0]}\t{kr[1][1]}").pipe(worker, checkCode=True) \
        .map(lambda l: l.split("\t")).cache()
    errors = signed.filter(lambda s: s[1] == "!").map(lambda s: (int(s[0]), s[2])).takeOrdered(1)
    if errors:
        raise InputError(errors[0][1])
    documents = signed.count()
    if documents == 0:
        raise InputError("no records to deduplicate")

    # key, name, text hash, signature, shingles
    first_of_hash = signed.map(lambda s: (s[2], int(s[0]))).reduceByKey(min, parts)
    exact = signed.map(lambda s: (s[2], int(s[0]))).join(first_of_hash, parts) \
        .filter(lambda hv: hv[1][0] != hv[1][1]).map(lambda hv: (hv[1][1], hv[1][0])).cache()
    distinct = signed.map(lambda s: (s[2], s)).join(first_of_hash, parts) \
        .filter(lambda hv: int(hv[1][0][0]) == hv[1][1]).map(lambda hv: hv[1][0])
    width = 8 * rows

    def band_keys(s):
        sh = frozenset(int(h, 16) for h in s[4].split(",")) if args.verify else None
        return [((b, s[3][b * width:(b + 1) * width]), (int(s[0]), sh)) for b in range(bands)]

    verify, threshold = args.verify, args.threshold
    near = distinct.flatMap(band_keys).groupByKey(parts).flatMap(lambda kv: bucket_edges(list(kv[1]), verify, threshold))
    roots = connected_components(exact.union(near), parts)  # (record, its cluster's first record)

    names = signed.map(lambda s: (int(s[0]), s[1]))
    root_names = roots.map(lambda nr: (nr[1], nr[0])).join(names, parts).map(lambda r: (r[1][0], r[1][1]))
    removed_keys = roots.map(lambda nr: (nr[0], None))
    kept = records.subtractByKey(removed_keys, parts).mapValues(lambda v: v[1])
    removed = records.join(root_names, parts).map(lambda kv: f"{kv[0]}\t{kv[1][1]}\t{kv[1][0][1]}") \
        .pipe(shlex.join([args.worker, "annotate"]), checkCode=True).map(lambda l: tuple(l.split("\t", 1))) \
        .map(lambda kl: (int(kl[0]), kl[1]))
    if is_local(args.out):
        os.makedirs(local_path(args.out), exist_ok=True)
    write_lines(sc, kept, args.out, "kept.jsonl", parts)
    write_lines(sc, removed, args.out, "removed.jsonl", parts)

    n_removed = roots.count()
    n_exact = exact.count()
    seconds = time.time() - start
    stats = {
        "documents": documents,
        "kept": documents - n_removed,
        "removed": n_removed,
        "exact_duplicates": n_exact,
        "near_duplicates": n_removed - n_exact,
        "clusters": roots.values().distinct(parts).count(),
        "bands": bands,
        "rows": rows,
        "threshold": args.threshold,
        "num_perm": args.num_perm,
        "ngram": args.ngram,
        "seconds": seconds,
        "docs_per_s": documents / max(seconds, 1e-9),
        "engine": "spark",
        "partitions": parts,
    }
    write_text(sc, args.out, "stats.json", json.dumps(stats, indent=2) + "\n")
    return stats


def main(argv=None):
    args = parse_args(argv)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("gptlab-dedup").config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
    if args.master or "SPARK_ENV_LOADED" not in os.environ:
        builder = builder.master(args.master or "local[*]")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        s = run(args, spark.sparkContext)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a failed Spark job: its first line, not the JVM's stack
        print(f"error: the Spark job failed: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    print(f"{s['documents']} documents: kept {s['kept']}, removed {s['removed']} ({s['exact_duplicates']} exact, "
          f"{s['near_duplicates']} near duplicates in {s['clusters']} clusters); {s['bands']} bands of {s['rows']} rows; "
          f"{s['docs_per_s']:.0f} docs/s on Spark; {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
