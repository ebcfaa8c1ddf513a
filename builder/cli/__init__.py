"""The `trtq` command. Sub-commands live one per module and are imported only when invoked (fast --help).

Exit codes: 0 success, 1 a build/run failed, 2 bad input (recipe, flags, layout).
"""

from __future__ import annotations

import importlib
import sys

import click

from builder import __version__

# command name -> (module, function, one-line help). Keep the help here so `trtq --help` imports nothing else.
COMMANDS = {
    "build": ("builder.cli.build", "build", "Build an artifact from a recipe (resolve, quantize, export, engines)."),
    "validate": ("builder.cli.validate", "validate", "Check recipes and report every problem at once."),
    "schema": ("builder.cli.schema", "schema", "Print the recipe JSON Schema (for editor completion)."),
    "plan": ("builder.cli.plan", "plan", "Predict per-rank GPU memory for a recipe and whether it fits a GPU."),
    "show": ("builder.cli.show", "show", "Show an artifact's manifest."),
    "ls": ("builder.cli.show", "ls", "List artifacts under the artifact root."),
    "run": ("builder.cli.run", "run", "Generate text from an artifact (mpirun -n <tp*pp> for split ones)."),
    "verify": (
        "builder.cli.verify",
        "verify",
        "Check an export's logits against the source model (reference runtime).",
    ),
    "eval": ("builder.cli.eval", "eval_", "Perplexity of an artifact vs its unquantized model (and smoke prompts)."),
    "bench": (
        "builder.cli.bench",
        "bench",
        "Throughput and latency (TTFT, TPOT, tokens/s, memory) of an artifact or an OpenAI-compatible endpoint.",
    ),
    "serve": (
        "builder.cli.serve",
        "serve",
        "Serve an artifact over an OpenAI-compatible HTTP API (trtllm-serve or CPU).",
    ),
    "export-triton": (
        "builder.cli.export_triton",
        "export_triton",
        "Write a Triton model repository (TensorRT-LLM backend) for an artifact's engines.",
    ),
    "report": ("builder.cli.report", "report", "Write a markdown/HTML report with plots comparing artifacts."),
    "publish": ("builder.cli.publish", "publish", "Publish an artifact to hf://, s3://, oci:// or file://."),
    "pull": ("builder.cli.pull", "pull", "Download an artifact, verify every sha256, check it runs here."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trtq")
def cli() -> None:
    """trtq: one YAML recipe to a verified, quantized TensorRT-LLM deployment.

    \b
    Example:
      trtq build recipes/smollm2-135m/bf16.yaml
      trtq show engines/smollm2-135m-bf16
    """


def main() -> None:
    """Console entry point: TrtqError -> one message and its exit code; anything else keeps its traceback."""
    from runtime.errors import TrtqError

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
    except TrtqError as e:
        for line in str(e).splitlines() or [type(e).__name__]:
            click.echo(f"error: {line}" if not _located(line) else line, err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


def _located(line: str) -> bool:
    """Recipe problems already start with `file:line:` or `--set ...:`; print them as they are."""
    head = line.split(": ", 1)[0]
    return head.startswith("--set ") or (":" in head and head.rsplit(":", 1)[1].isdigit())
