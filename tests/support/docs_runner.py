"""Docs that run: the shell examples of README.md and docs/*.md, executed against a sandbox
started as `make run` starts it, and their documented outputs compared with what they print.

How a page is read (the conventions its authors follow):

- a ```` ```console ```` block is a terminal session: a line starting with `$ ` is a command (it
  goes on while a line ends with a backslash), the lines after it, up to the next `$ `, are what
  it prints;
- a ```` ```bash ```` block is a step to run; a block right after it, with at most blank lines
  between (```` ```json ````, ```` ```text ```` or a bare fence), is what the step prints;
- every other block (```` ```sh ````, diagrams, listings) is not run, so a page shows commands
  like `make bench` that way. `<!-- docs-test: skip (why) -->` on the line before a bash or
  console block leaves it out too, and the test asks that no skipped block calls curl;
- `<!-- docs-test: run by tests/….py -->` leaves out a block that test runs with checks of its own;
- the steps of one page run in order in one bash, so a variable set by an earlier step (an id
  taken from an output) is there for the later ones. Pages start from a freshly reset sandbox.

Documented outputs are compared line by line, in order, each line found after the previous one
(so an output may leave lines out, e.g. headers). Within a line, spaces match any spacing (a page
may pretty-print compact JSON), `…` or `...` matches anything, and what differs from run to run
matches its kind: generated ids (`acc_01m8…`, never the seeded `acc_0000…`), times and dates,
hashes, request ids, tokens, latencies and rate-limit reset seconds.

`python -m tests.support.docs_runner docs/credit.md` runs one page on a fresh sandbox and prints
each step, what it printed, and the first documented line not found.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.topology import built_services
from tests.support.stack import sandbox_for

ROOT = Path(__file__).resolve().parents[2]
SPECS = built_services()
SKIP_MARK = "<!-- docs-test: skip"
# A block a dedicated test runs, with checks of its own (the README's walkthroughs): not run
# here, and allowed to call curl as long as that test file exists.
ELSEWHERE_MARK = re.compile(r"<!-- docs-test: run by (\S+) -->")
STEP_TIMEOUT_S = 180


def documented_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass
class Step:
    page: str
    line: int  # 1-based line of the command in the page
    script: str
    expected: str | None  # what the page says it prints; None: not documented


@dataclass
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    body: str
    skipped: bool
    run_elsewhere: str | None = None  # the test file that runs it


def blocks_of(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)(```+)(\S*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match.groups()
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i].removeprefix(indent))
            i += 1
        before = lines[start - 1].strip() if start > 0 else ""
        elsewhere = ELSEWHERE_MARK.match(before)
        skipped = before.startswith(SKIP_MARK) or elsewhere is not None
        blocks.append(Block(lang, start + 1, "\n".join(body), skipped, elsewhere.group(1) if elsewhere else None))
        i += 1
    return blocks


def _console_steps(page: str, block: Block) -> list[Step]:
    steps: list[Step] = []
    lines = block.body.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            i += 1
            continue
        line_no = block.line + 1 + i
        command = [lines[i][2:]]
        while command[-1].rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            command.append(lines[i])
        i += 1
        output: list[str] = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        expected = "\n".join(output).strip("\n")
        steps.append(Step(page, line_no, "\n".join(command), expected or None))
    return steps


OUTPUT_LANGS = {"", "json", "text"}


def steps_of(path: Path) -> list[Step]:
    page = path.relative_to(ROOT).as_posix()
    blocks = blocks_of(path.read_text(encoding="utf-8"))
    text_lines = path.read_text(encoding="utf-8").splitlines()
    steps: list[Step] = []
    for n, block in enumerate(blocks):
        if block.skipped:
            continue
        if block.lang == "console":
            steps.extend(_console_steps(page, block))
        elif block.lang == "bash":
            expected = None
            after = blocks[n + 1] if n + 1 < len(blocks) else None
            closing = _closing_line(text_lines, block)
            between = text_lines[closing:after.line - 1] if after is not None else []
            if after is not None and after.lang in OUTPUT_LANGS and all(not t.strip() for t in between):
                expected = after.body
            steps.append(Step(page, block.line + 1, block.body, expected))
    return steps


def _closing_line(lines: list[str], block: Block) -> int:
    """1-based line of a block's closing fence."""
    return block.line + len(block.body.splitlines()) + 1


def skipped_curl_blocks(path: Path) -> list[int]:
    """Lines of blocks that call curl but are not run (a ```sh block, or one marked skip)."""
    return [b.line for b in blocks_of(path.read_text(encoding="utf-8"))
            if re.search(r"(^|[\s$(])curl\s", b.body)
            and (b.skipped or b.lang not in {"bash", "console"})
            and not (b.run_elsewhere and (ROOT / b.run_elsewhere).is_file())]


# -- comparing outputs -------------------------------------------------------------------------

_ANY = "\0ANY\0"
# Kinds of value that differ between runs, each matched by its pattern, not its text. Order
# matters: the first that matches a place in the documented text wins.
_VOLATILE: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"…|\.\.\."), _ANY),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"),
     r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"),
     r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    (re.compile(r"\bsbx-gw-[0-9A-Za-z_-]+"), r"sbx-gw-[0-9A-Za-z_-]+"),
    (re.compile(r"\bsbx_(?:at|code|rt|cs)_[0-9A-Za-z_-]+"), r"sbx_[a-z]+_[0-9A-Za-z_-]+"),
    (re.compile(r"\breq_[0-9a-f]{8,}\b"), r"req_[0-9a-f]+"),
    (re.compile(r"\b[0-9a-f]{16,64}\b"), r"[0-9a-f]+"),
]
_GENERATED_ID = re.compile(r"\b([a-z]{2,6})_([0-9a-z]{26})\b")
_TIMING = re.compile(r'("?[a-z_]*(?:_ms|latency[a-z_]*|_seconds)"?\s*[:=]\s*)(-?[0-9.]+)')
_RATELIMIT_RESET = re.compile(r"(ratelimit-reset:\s*)\d+", re.IGNORECASE)


def line_pattern(line: str) -> str:
    """A documented line as a regular expression (see the module's docstring)."""
    line = _RATELIMIT_RESET.sub(lambda m: m.group(1) + "\0NUM\0", line)
    line = _TIMING.sub(lambda m: m.group(1) + "\0NUM\0", line)
    parts: list[str] = []
    pos = 0
    while pos < len(line):
        best: tuple[int, int, str] | None = None
        for pattern, replacement in _VOLATILE:
            m = pattern.search(line, pos)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), m.end(), replacement)
        gid = next((m for m in _GENERATED_ID.finditer(line, pos) if not m.group(2).startswith("0000000")), None)
        if gid and (best is None or gid.start() < best[0]):
            best = (gid.start(), gid.end(), re.escape(gid.group(1)) + r"_[0-9a-z]{26}")
        if best is None:
            parts.append(_literal(line[pos:]))
            break
        parts.append(_literal(line[pos:best[0]]))
        parts.append(r"[\s\S]*?" if best[2] == _ANY else best[2])
        pos = best[1]
    return "".join(parts)


def _literal(text: str) -> str:
    out = []
    for piece in re.split(r"(\s+|\0NUM\0)", text):
        if not piece:
            continue
        if piece == "\0NUM\0":
            out.append(r"-?[0-9.]+")
        elif piece.isspace():
            out.append(r"\s*")
        else:
            out.append(re.escape(piece))
    return "".join(out)


def first_missing_line(expected: str, actual: str) -> str | None:
    """The first documented line not found (in order) in what was printed, or None."""
    actual = actual.replace("\r", "")
    pos = 0
    for raw in expected.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = re.compile(line_pattern(line)).search(actual, pos)
        if m is None:
            return raw
        pos = m.end()
    return None


_ERROR_ANSWER = re.compile(r'"status":\s*([45]\d\d)\b|^HTTP/[\d.]+ ([45]\d\d)\b|"Errors":\s*\[', re.MULTILINE)


def unshown_error(output: str) -> str | None:
    """An error answer in what a step printed (problem+json, an HTTP status line, OBIE errors)."""
    m = _ERROR_ANSWER.search(output)
    if m is None:
        return None
    return m.group(0).strip()


# -- running a page ----------------------------------------------------------------------------

def rewrite_ports(text: str, offset: int) -> str:
    for spec in SPECS:
        for host in ("127.0.0.1", "localhost"):
            text = text.replace(f"{host}:{spec.port}", f"127.0.0.1:{spec.port + offset}")
    return text


@dataclass
class StepResult:
    step: Step
    output: str
    failed_command: bool
    missing: str | None = None
    unshown_error: str | None = None  # an error answer the page does not show (no output documented)


@dataclass
class PageRun:
    page: str
    results: list[StepResult] = field(default_factory=list)
    stderr: str = ""

    def problems(self) -> list[str]:
        out = []
        for r in self.results:
            where = f"{r.step.page}:{r.step.line}"
            if r.failed_command:
                out.append(f"{where}: a command failed\n{_indent(r.step.script)}\nprinted:\n{_indent(r.output)}")
            elif r.missing is not None:
                out.append(f"{where}: documented line not printed:\n    {r.missing.strip()}\n"
                           f"command:\n{_indent(r.step.script)}\nprinted:\n{_indent(r.output)}")
            elif r.unshown_error is not None:
                out.append(f"{where}: answered an error the page does not show ({r.unshown_error}); document the "
                           f"output after the block, or fix the step\ncommand:\n{_indent(r.step.script)}\n"
                           f"printed:\n{_indent(r.output)}")
        if len(self.results) < len(steps_of(ROOT / self.page)):
            out.append(f"{self.page}: stopped after step {len(self.results)}\n{self.stderr}")
        return out


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()[:60])


def run_page(path: Path, workdir: Path, offset: int) -> PageRun:
    """Every step of one page, in order, in one bash whose working directory is `workdir`."""
    steps = steps_of(path)
    parts = ["set -o pipefail", "__sbx_failed=0", "trap '__sbx_failed=1' ERR"]
    for i, step in enumerate(steps):
        parts.append(f"printf '\\n@@STEP {i} BEGIN@@\\n'")
        parts.append("__sbx_failed=0")
        parts.append("{\n" + rewrite_ports(step.script, offset) + "\n} 2>&1")
        parts.append(f"printf '\\n@@STEP {i} END %s@@\\n' \"$__sbx_failed\"")
    # The user's PATH, without the venv's: a page calls `.venv/bin/fintech-sandbox`, as a user must.
    venv_bin = str(Path(sys.executable).parent)
    user_path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {**os.environ, "PATH": user_path}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(["bash", "-c", "\n".join(parts)], cwd=workdir, capture_output=True, text=True,
                          timeout=STEP_TIMEOUT_S, env=env)
    run = PageRun(path.relative_to(ROOT).as_posix(), stderr=proc.stderr)
    for i, step in enumerate(steps):
        m = re.search(rf"\n@@STEP {i} BEGIN@@\n(.*?)\n@@STEP {i} END (\d)@@\n", proc.stdout, re.DOTALL)
        if m is None:
            break
        output, failed = m.group(1), m.group(2) == "1"
        result = StepResult(step, output, failed)
        if not failed and step.expected is not None:
            result.missing = first_missing_line(rewrite_ports(step.expected, offset), output)
        elif not failed:
            result.unshown_error = unshown_error(output)
        run.results.append(result)
    return run


def main(argv: list[str]) -> int:
    import tempfile

    from tests.support.ports import free_port_offset

    pages = [Path(a).resolve() for a in argv] or documented_pages()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="docs-run-") as tmp:
        for sandbox in sandbox_for(Path(tmp), free_port_offset()):
            for page in pages:
                sandbox.reset()
                run = run_page(page, sandbox.workdir, sandbox.offset)
                for r in run.results:
                    mark = ("FAILED" if r.failed_command else "MISSING" if r.missing is not None
                            else "UNSHOWN-ERROR" if r.unshown_error is not None else "ok")
                    print(f"--- {r.step.page}:{r.step.line} [{mark}]\n{r.step.script}\n>>>\n{r.output.rstrip()}")
                    if r.missing is not None:
                        print(f"!!! documented line not printed: {r.missing.strip()}")
                problems = run.problems()
                failures += len(problems)
                print(f"=== {run.page}: {len(run.results)} steps, {len(problems)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
