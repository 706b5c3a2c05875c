"""The render check (tools/check_render.py) on small HTML snippets: each defect found, good pages pass."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "check_render", Path(__file__).resolve().parents[1] / "tools" / "check_render.py")
check_render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_render)
page_problems, tex_problems = check_render.page_problems, check_render.tex_problems


def _output(text: str) -> str:
    """A myst-nb execute_result, as the HTML builder writes it."""
    return ('<div class="cell_output docutils container"><div class="output text_plain highlight-myst-ansi '
            f'notranslate"><div class="highlight"><pre><span></span>{text}</pre></div></div></div>')


def test_raw_pipe_paragraph_is_found_and_a_real_table_passes():
    broken = "<p>| label | loss |\n|---|---|\n| binary | bce |</p>"
    good = "<table><tr><th>label</th><th>loss</th></tr><tr><td>binary</td><td>bce</td></tr></table>"
    assert [p for p in page_problems(broken) if "raw Markdown table" in p]
    assert page_problems(good) == []
    assert page_problems("<p>The value |x| is small.</p>") == []  # a pipe later in the text is fine


@pytest.mark.parametrize("tex, problem", [
    (r"\begin{split}a &= b \\ c &= d \tag{4}\end{split}", "\\tag inside split"),
    (r"\begin{aligned}a &= b \tag{1}\\ c\end{aligned}", "\\tag inside aligned"),
    (r"\frac{a}{b", "unbalanced braces"),
    (r"a}{b", "unbalanced braces"),
    (r"\begin{cases} a \\ b \end{array}", "does not match"),
])
def test_tex_that_mathjax_rejects_is_found(tex, problem):
    assert any(problem in p for p in tex_problems(tex))


@pytest.mark.parametrize("tex", [
    r"\mathbf{v} = \nabla g \tag{3}",
    r"\begin{equation}v = \begin{cases} a & x \\ b & y \end{cases} \tag{4}\end{equation}",
    r"\{x : x > 0\} \cup \{0\}",
    r"\begin{split}a &= b \\ c &= d\end{split}",
])
def test_good_tex_passes(tex):
    assert tex_problems(tex) == []


def test_tex_is_checked_inside_the_page_math_div():
    html = r'<div class="math notranslate nohighlight">\[\begin{split}a\\b \tag{4}\end{split}\]</div>'
    assert any("\\tag inside split" in p for p in page_problems(html))
    assert page_problems(r'<span class="math notranslate nohighlight">\(x_{i}\)</span>') == []
    numbered = (r'<div class="math notranslate nohighlight" id="equation-auroc"><span class="eqno">(7.1)'
                r'<a class="headerlink" href="#equation-auroc">#</a></span>\[a \tag{4}\]</div>')
    assert page_problems(numbered) == []
    node_modules = _node_modules()
    if node_modules is not None:  # the equation number is not part of the formula MathJax sees
        assert page_problems(numbered, node_modules) == []


@pytest.mark.parametrize("echo", ["0.123", "42", "'0.1.0'", "np.float64(0.97)",
                                  "&lt;matplotlib.image.AxesImage at 0x7f3a&gt;", "Text(0.5, 1.0, 'title')"])
def test_stray_outputs_are_found(echo):
    assert [p for p in page_problems(_output(echo)) if "stray output" in p]


def test_meaningful_outputs_and_printed_numbers_pass():
    assert page_problems(_output("{'numpy': '3.1 ms', 'opencv': '2.0 ms'}")) == []
    assert page_problems(_output("tensor([[0.5, 0.2]])")) == []
    printed = ('<div class="output stream highlight-myst-ansi notranslate"><div class="highlight">'
               '<pre><span></span>0.5\n</pre></div></div>')
    assert page_problems(printed) == []  # a print() is deliberate; only execute results echo


def test_main_reports_problems_and_exit_codes(tmp_path, capsys):
    assert check_render.main([str(tmp_path / "missing")]) == 2
    (tmp_path / "good.html").write_text("<p>fine</p>")
    assert check_render.main([str(tmp_path)]) == 0
    (tmp_path / "bad.html").write_text("<p>| a | b |</p>" + _output("3"))
    assert check_render.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "bad.html: raw Markdown table" in out and "bad.html: stray output" in out


def test_strip_delimiters():
    assert check_render.strip_delimiters(r" \[x^2\] ") == "x^2"
    assert check_render.strip_delimiters(r"\(a\)") == "a"
    assert check_render.strip_delimiters(r"\begin{equation}a\end{equation}") == r"\begin{equation}a\end{equation}"


def _node_modules():
    """A folder with the mathjax-full npm package (MATHJAX_NODE_MODULES or _build/mathjax), or None."""
    import os
    import shutil

    root = Path(__file__).resolve().parents[1]
    folder = Path(os.environ.get("MATHJAX_NODE_MODULES", root / "_build" / "mathjax" / "node_modules"))
    return folder if shutil.which("node") and (folder / "mathjax-full").is_dir() else None


@pytest.mark.skipif(_node_modules() is None, reason="needs node and the mathjax-full npm package")
def test_mathjax_itself_rejects_what_the_browser_would():
    formulas = [(True, r"\begin{split}a \\ b \tag{4}\end{split}"), (True, r"x^2 \tag{1}"),
                (False, r"\undefinedmacro{x}"), (True, r"\begin{equation}v = \begin{cases} a & b \\ c & d"
                                                       r"\end{cases} \tag{4}\end{equation}")]
    problems = check_render.typeset_problems(formulas, _node_modules())
    assert len(problems) == 2
    assert "\\tag not allowed in split" in problems[0] and "undefinedmacro" in problems[1]


def _printed(text: str) -> str:
    """A myst-nb stream output (what a cell printed)."""
    return ('<div class="cell_output docutils container"><div class="output stream highlight-myst-ansi '
            f'notranslate"><div class="highlight"><pre><span></span>{text}</pre></div></div></div>')


@pytest.mark.parametrize("text, what", [
    ("run directory /tmp/ci-clone/_build/book-runs/elpv-mono-quick", "'/tmp/'"),
    (f"model in {Path(__file__).resolve().parents[1]}/_build/runs", "path"),
    (f"cache {Path.home()}/.cache/nsa-tutorial", "path"),
    ("Linux-6.18.44-x86_64-with-glibc2.36", "platform string"),
])
def test_machine_detail_in_outputs_is_found(text, what):
    for html in (_printed(text), _output(text),  # printed, a result, and a Markdown table's cell
                 f'<div class="cell_output docutils container"><table><tr><td>{text}</td></tr></table></div>'):
        assert any("machine detail" in p and what in p for p in page_problems(html)), html


def test_paths_in_prose_and_code_and_relative_paths_pass():
    assert page_problems(_printed("quick mode: 128 px, run directory ../_build/book-runs/elpv-mono-quick")) == []
    assert page_problems(_printed("My Drive/nsa-tutorial/runs/elpv-mono-full")) == []
    # the same text outside a cell output (prose, a code cell's source) is not an output
    assert page_problems('<div class="cell_input"><pre>train(config, data, "/tmp/a")</pre></div>') == []
    assert page_problems("<p>Colab keeps files in /tmp/ until the runtime ends.</p>") == []


def _check_cell(printed: str) -> str:
    """An exercise's check cell (tag "check"): its source and what grader.check showed."""
    return ('<div class="cell tag_check docutils container"><div class="cell_input docutils container">'
            '<pre>grader.check(<span class="s2">&quot;ex-model-1&quot;</span>)</pre></div>'
            f'{_output(printed)}</div>')


def test_an_exercise_check_that_did_not_pass_is_found():
    assert page_problems(_check_cell("ex-model-1 results: All test cases passed!")) == []
    assert page_problems(_check_cell("ex-model-1 passed! \U0001f308")) == []  # otter's HTML
    failed = page_problems(_check_cell("ex-model-1 results:\n  \u274c Test case failed\n"
                                       "AssertionError: saved = 3,136 does not match"))
    assert len(failed) == 1 and "exercise check ex-model-1 did not pass" in failed[0] and "3,136" in failed[0]
    # a check cell that shows nothing (not run, or its output removed) did not pass either
    assert "did not pass" in page_problems('<div class="cell tag_check docutils container">'
                                           '<pre>grader.check("ex-model-1")</pre></div>')[0]
