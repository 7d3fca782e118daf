"""HTML reports a person can read: headline numbers, text, tables, figures, provenance.

One self-contained file: figures are matplotlib figures embedded as PNG (base64), so the
report can be mailed or opened offline. Build it top to bottom, then ``save``.

Example:
    >>> import tempfile, os
    >>> import matplotlib.pyplot as plt
    >>> r = Report("Toy study", subtitle="what we did")
    >>> r.numbers({"accuracy": 0.981, "epochs": 300})
    >>> r.text("The model <b>barely</b> uses attention.")
    >>> r.table(["setting", "acc"], [["full", 0.98], ["fixed", 0.93]], caption="Scrubbing")
    >>> fig, ax = plt.subplots(); _ = ax.plot([0, 1], [1, 0])
    >>> r.figure(fig, caption="A line")
    >>> path = r.save(os.path.join(tempfile.mkdtemp(), "report.html"))
    >>> "A line" in open(path).read()
    True
"""

from __future__ import annotations

import base64
import datetime
import io
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from interplab.io import PathLike, atomic_write_text  # noqa: E402

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.1em} .sub{color:#666;margin-top:0}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
figure{margin:1em 0} figcaption{color:#555;font-size:.92em} img{max-width:100%}
.nums{display:flex;flex-wrap:wrap;gap:.6em} .num{border:1px solid #ddd;border-radius:6px;padding:.4em .8em}
.num b{display:block;font-size:1.3em} .num span{color:#666;font-size:.85em}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto} .prov{color:#777;font-size:.85em}
"""


def announce(headline: str | Sequence[str], report_path: PathLike) -> None:
    """Print a study's headline numbers, then the path of its report: the one printing path of studies.

    Always printed: a study's ``quiet`` silences progress bars and intermediate lines only.

    Example:
        >>> announce(["accuracy 0.98"], "out/report.html")
        accuracy 0.98
        report: out/report.html
    """
    for line in [headline] if isinstance(headline, str) else headline:
        print(line)
    print(f"report: {report_path}")


def image_grid(images: Any, titles: Sequence[str], cols: int = 20, size: float = 0.75, cmap: str = "gray") -> Figure:
    """A matplotlib figure of images ([n, H, W] on [0, 1]) in a grid, each with a small title.

    Example:
        >>> import numpy as np
        >>> fig = image_grid(np.zeros((3, 4, 4)), ["a", "b", "c"], cols=2)
        >>> len(fig.axes)
        4
        >>> plt.close(fig)
    """
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap=cmap, vmin=0, vmax=1)
            ax.set_title(titles[i], fontsize=6)
    return fig


# Draws the selected head's pattern as an SVG grid (queries down, keys across), darker = more attention.
_ATTN_JS = """(function(uid){
var root=document.getElementById(uid), d=JSON.parse(document.getElementById(uid+'-data').textContent);
var sel=root.querySelector('select'), box=root.querySelector('.grid'), val=root.querySelector('.val');
var n=d.tokens.length, c=Math.max(8,Math.min(22,Math.floor(640/Math.max(n,1)))), m=110, NS='http://www.w3.org/2000/svg';
function el(t,a){var e=document.createElementNS(NS,t);for(var k in a)e.setAttribute(k,a[k]);return e;}
function esc(s){return s.replace(/ /g,'\u00b7');}
function draw(){
 var p=d.patterns[+sel.value], W=m+n*c+4, svg=el('svg',{width:W,height:W,'font-size':Math.min(11,c-1)});
 for(var i=0;i<n;i++){
  var tq=el('text',{x:m-4,y:m+i*c+c*0.75,'text-anchor':'end'});tq.textContent=esc(d.tokens[i]);svg.appendChild(tq);
  var tk=el('text',{x:0,y:0,'text-anchor':'start',transform:'translate('+(m+i*c+c*0.75)+','+(m-4)+') rotate(-90)'});
  tk.textContent=esc(d.tokens[i]);svg.appendChild(tk);
  for(var j=0;j<n;j++){
   var r=el('rect',{x:m+j*c,y:m+i*c,width:c-1,height:c-1,fill:'rgb(20,60,160)','fill-opacity':j>i?0:Math.max(0.03,p[i][j]),
     stroke:'#eee','stroke-width':0.5});
   (function(i,j){r.addEventListener('mouseover',function(){val.textContent='query '+i+' '+JSON.stringify(d.tokens[i])+
     ' -> key '+j+' '+JSON.stringify(d.tokens[j])+': '+p[i][j];});})(i,j);
   svg.appendChild(r);}}
 box.innerHTML='';box.appendChild(svg);}
sel.addEventListener('change',draw);draw();})"""


def fmt(x: Any) -> str:
    """Format a number for people: 4 significant digits, ints as ints.

    Example:
        >>> fmt(0.98765), fmt(12), fmt(1e-7), fmt("pentagon")
        ('0.9877', '12', '1e-07', 'pentagon')
    """
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    return f"{x:.4g}"


_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title><style>{{ css }}</style></head>
<body>
<h1>{{ title }}</h1>
{% if subtitle %}<p class="sub">{{ subtitle }}</p>{% endif %}
{% for b in blocks %}
{%- if b.kind == "section" %}<h2>{{ b.heading }}</h2>
{%- elif b.kind == "text" %}<p>{{ b.content }}</p>
{%- elif b.kind == "code" %}<pre>{{ b.source }}</pre>
{%- elif b.kind == "numbers" %}<div class="nums">{% for k, v in b.tiles %}<div class="num"><b>{{ v }}</b><span>{{ k }}</span></div>{% endfor %}</div>
{%- elif b.kind == "table" %}<table>{% if b.caption %}<caption>{{ b.caption }}</caption>{% endif %}<tr>{% for h in b.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in b.body %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{%- elif b.kind == "attention" %}<figure class="attnview" id="{{ b.uid }}"><label>head <select>{% for lab in b.labels %}<option value="{{ loop.index0 }}">{{ lab }}</option>{% endfor %}</select></label> <span class="val"></span><div class="grid"></div>{% if b.caption %}<figcaption>{{ b.caption }}</figcaption>{% endif %}</figure><script type="application/json" id="{{ b.uid }}-data">{{ b.payload }}</script><script>{{ b.js }}('{{ b.uid }}');</script>
{%- elif b.kind == "figure" %}<figure><img src="data:image/png;base64,{{ b.png }}" alt="{{ b.caption }}">{% if b.caption %}<figcaption>{{ b.caption }}</figcaption>{% endif %}</figure>
{%- endif %}
{% endfor %}
<hr><p class="prov">{{ provenance }}</p>
</body></html>
"""


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)


class Report:
    """An HTML report assembled section by section; see the module docstring.

    The page is rendered by a jinja2 template with autoescaping: every title, heading, number,
    table cell and caption is escaped; only :meth:`text` takes (trusted) markup. Figures are
    embedded as base64 PNG, so the file is self-contained.
    """

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.blocks: list[dict[str, Any]] = []

    def section(self, heading: str) -> None:
        """Start a new section with a heading."""
        self.blocks.append({"kind": "section", "heading": heading})

    def text(self, content: str) -> None:
        """A paragraph; ``content`` is trusted markup written by the study (b, i, code), not user data."""
        from markupsafe import Markup

        self.blocks.append({"kind": "text", "content": Markup(content)})

    def code(self, source: str) -> None:
        """A block of source code, shown verbatim."""
        self.blocks.append({"kind": "code", "source": source})

    def numbers(self, values: Mapping[str, Any]) -> None:
        """Headline numbers as tiles (name under value)."""
        self.blocks.append({"kind": "numbers", "tiles": [(str(k), fmt(v)) for k, v in values.items()]})

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> None:
        """A table; numbers are formatted with :func:`fmt`."""
        self.blocks.append({"kind": "table", "header": [str(h) for h in header],
                            "body": [[fmt(c) for c in row] for row in rows], "caption": caption})

    def figure(self, fig: Figure, caption: str = "", dpi: int = 110) -> None:
        """Embed a matplotlib figure as PNG and close it."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        png = base64.b64encode(buf.getvalue()).decode("ascii")
        self.blocks.append({"kind": "figure", "png": png, "caption": caption})

    def attention(self, tokens: Sequence[str], patterns: Any, labels: Sequence[str], caption: str = "") -> None:
        """An interactive attention-pattern viewer: a head selector and a query x key grid with
        the tokens on both axes (inline SVG drawn by inline JavaScript, so it works offline).

        ``tokens``: the ``n`` token strings; ``patterns``: ``[n_heads, n, n]`` (query, key;
        a tensor or nested lists) with one ``labels`` entry per head, e.g. ``"L1H3"``.

        Example:
            >>> r = Report("x")
            >>> r.attention(["<bos>", " A", " B"], [[[1, 0, 0], [.5, .5, 0], [.2, .3, .5]]], ["L0H0"])
            >>> "L0H0" in r.html() and "<select>" in r.html()
            True
        """
        import json

        pat = patterns.tolist() if hasattr(patterns, "tolist") else patterns
        n = len(tokens)
        if len(pat) != len(labels) or any(len(p) != n or any(len(row) != n for row in p) for p in pat):
            raise ValueError(f"patterns must be [{len(labels)} heads, {n}, {n}] to match labels and tokens.")
        data = {"tokens": list(tokens), "labels": list(labels),
                "patterns": [[[round(float(v), 3) for v in row] for row in p] for p in pat]}
        from markupsafe import Markup

        uid = f"attn{sum(1 for b in self.blocks if b['kind'] == 'attention')}"
        payload = Markup(json.dumps(data).replace("</", "<\\/"))  # JSON for the script below, not HTML text
        self.blocks.append({"kind": "attention", "uid": uid, "labels": list(labels), "caption": caption,
                            "payload": payload, "js": Markup(_ATTN_JS)})

    def html(self) -> str:
        """The whole page as a string, with a provenance footer.

        Example:
            >>> r = Report("<script>x</script>")
            >>> r.table(["a<b"], [[1]])
            >>> page = r.html()
            >>> "<script>x" in page, "&lt;script&gt;x" in page, "a&lt;b" in page
            (False, True, True)
        """
        import torch

        from interplab import __version__

        prov = (
            f"interplab {__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}, "
            f"{platform.platform()}, written {datetime.datetime.now().isoformat(timespec='seconds')}; "
            f"command: {' '.join(sys.argv)}"
        )
        return _environment().from_string(_TEMPLATE).render(
            title=self.title, subtitle=self.subtitle, blocks=self.blocks, css=_CSS_MARKUP(), provenance=prov)

    def save(self, path: PathLike) -> Path:
        """Write the report atomically; returns the path."""
        path = Path(path)
        atomic_write_text(path, self.html())
        return path


def _CSS_MARKUP() -> Any:
    from markupsafe import Markup

    return Markup(_CSS)
