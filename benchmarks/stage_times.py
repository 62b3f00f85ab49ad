"""Per-stage wall time and peak memory of a finished run, from Snakemake's benchmark files.

Run by hand after `snakemake ... all`:  python benchmarks/stage_times.py synthetic
Writes benchmarks/stage_times_<run>.md and prints it.
"""

import sys
from pathlib import Path

import pandas as pd

from clip_backdoor.report.tables import to_markdown


def main(run="synthetic"):
    root = Path("results") / run / "benchmarks"
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        bench = pd.read_csv(path, sep="\t")
        job = path.relative_to(root).with_suffix("").as_posix()
        rows.append(
            {
                "job": job,
                "stage": job.split("/")[0],
                "seconds": bench["s"].iloc[0],
                "max_rss_mb": bench["max_rss"].iloc[0],
            }
        )
    frame = pd.DataFrame(rows)
    by_stage = (
        frame.groupby("stage")
        .agg(jobs=("job", "count"), seconds=("seconds", "sum"), max_rss_mb=("max_rss_mb", "max"))
        .reset_index()
    )
    total = frame["seconds"].sum()
    text = (
        f"# Stage times, run `{run}`\n\nSum of job wall times: {total / 60:.1f} min\n\n"
        + to_markdown(by_stage.round(1))
        + "\n\n## Jobs\n\n"
        + to_markdown(frame.round(1))
        + "\n"
    )
    out = Path("benchmarks") / f"stage_times_{run}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
