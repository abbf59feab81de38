"""Execute a notebook top to bottom with nbclient, on a kernel running this very interpreter.

    python run_notebook.py NOTEBOOK.ipynb SCALING_DIR

The kernel starts in the notebook's directory with SCALING_DIR set in its environment. The
notebook file is not modified. Prints `notebook ok: N cells` on success; on failure prints
one line `notebook failed: ...` to stderr and exits 1.
"""
import os
import sys
import tempfile
from pathlib import Path


def fail(msg):
    first = next((line for line in str(msg).splitlines() if line.strip()), "unknown error")
    print(f"notebook failed: {first}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    nb_path = Path(sys.argv[1]).resolve()
    scaling_dir = Path(sys.argv[2]).resolve()
    if not nb_path.is_file():
        fail(f"no notebook at {nb_path}")
    if not scaling_dir.is_dir():
        fail(f"no directory {scaling_dir}")

    import nbformat
    from ipykernel.kernelspec import write_kernel_spec
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(nb_path, as_version=4)
    os.environ["SCALING_DIR"] = str(scaling_dir)

    with tempfile.TemporaryDirectory(prefix="gptlab-nb-") as tmp:
        # A python3 kernel spec whose argv is this interpreter, first on JUPYTER_PATH, so a
        # python3 spec elsewhere (~/.local/share/jupyter, /usr/share/jupyter) cannot win.
        write_kernel_spec(Path(tmp, "kernels", "python3"), overrides={"argv": [
            sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]})
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            [tmp] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p])
        os.environ.setdefault("MPLBACKEND", "Agg")  # only matters if the notebook skips %matplotlib inline

        client = NotebookClient(
            nb,
            kernel_name="python3",
            timeout=120,
            startup_timeout=120,
            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no start-up chatter on stderr
            resources={"metadata": {"path": str(nb_path.parent)}},
        )
        try:
            client.execute()
        except CellExecutionError as e:
            # e.ename / e.evalue: the exception raised inside the kernel.
            idx = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                        and any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
            where = f"cell {idx}" if idx is not None else "a cell"
            fail(f"{where}: {e.ename}: {e.evalue}")
        except CellTimeoutError as e:
            fail(f"cell timed out: {e}")
        except DeadKernelError as e:
            fail(f"kernel died: {e}")
        except Exception as e:  # kernel start-up and the like
            fail(f"{type(e).__name__}: {e}")

    print(f"notebook ok: {len(nb.cells)} cells")


if __name__ == "__main__":
    main()
