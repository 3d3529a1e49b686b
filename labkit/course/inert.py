"""Inert HTML: nothing a student wrote runs in the browser of whoever reads it (issue 23).

A written answer is the student's markdown, and markdown may hold HTML; an output may be HTML or JavaScript
(``display(HTML(...))``, ``display(Javascript(...))``). Rendered as they are, they run in the instructor's
logged-in formgrader, where a script can read the ``_xsrf`` cookie and change grades through the REST API.
Neither nbconvert nor nbgrader cleans them by default, and nbgrader's formgrade and feedback templates render
markdown cells without nbconvert's ``clean_html``. ``inert_html(c)`` sets three layers on a traitlets config,
for every ``HTMLExporter`` made from it (the formgrader's view of a submission, the feedback, ``labkit report``):

1. ``SanitizeHTML`` (nbconvert's preprocessor) cleans the notebook before any template sees it: markdown and
   HTML outputs go through bleach, JavaScript and every output type not known to be safe (SVG, widgets) go;
2. ``markdown2html`` (below) replaces nbconvert's filter of that name, which every template uses: the HTML
   that markdown becomes is cleaned again, so a markdown link ``[x](javascript:...)`` loses its address;
3. ``sanitize_html`` makes nbconvert's base templates clean the outputs they render.
"""

from __future__ import annotations

# What survives: plain text layout, tables, links to http(s) or mail addresses, images only as data: URIs
# (pasted attachments). No script, style, frame, form, object or event attribute.
SAFE_TAGS = frozenset(
    {
        "a",
        "abbr",
        "acronym",
        "b",
        "blockquote",
        "br",
        "code",
        "del",
        "details",
        "div",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "li",
        "ol",
        "p",
        "pre",
        "span",
        "strong",
        "sub",
        "summary",
        "sup",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
SAFE_PROTOCOLS = frozenset({"http", "https", "mailto", "data"})


def _allowed_attribute(tag: str, name: str, value: str) -> bool:
    if tag == "a":
        return name == "title" or (name == "href" and not value.strip().lower().startswith("data:"))
    if tag == "img":
        return name == "alt" or (name == "src" and value.strip().lower().startswith("data:image/"))
    return name in ("title", "align") or (name == "id" and tag.startswith("h"))


def clean(html: str) -> str:
    """``html`` with only ``SAFE_TAGS`` and safe attributes left; anything else is escaped as text."""
    import bleach

    return bleach.clean(html, tags=SAFE_TAGS, attributes=_allowed_attribute, protocols=SAFE_PROTOCOLS)


try:
    from jinja2 import pass_context
except ImportError:  # pragma: no cover - jinja2 comes with nbconvert

    def pass_context(f):
        return f


@pass_context
def markdown2html(context, source: str) -> str:
    """nbconvert's markdown filter (attachments included), followed by ``clean``."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    cell = context.get("cell", {}) if hasattr(context, "get") else {}
    resources = context.get("resources", {}) if hasattr(context, "get") else {}
    renderer = IPythonRenderer(
        escape=False,
        attachments=cell.get("attachments", {}),
        embed_images=bool(resources.get("embed_images")),  # labkit report: pictures inside
        path=(resources.get("metadata") or {}).get("path", ""),
        exclude_anchor_links=True,
    )
    return clean(MarkdownWithMath(renderer=renderer).render(source))


def inert_html(c):
    """Set the three layers on the traitlets config ``c`` (see the module's docstring); returns ``c``."""
    c.HTMLExporter.sanitize_html = True
    c.HTMLExporter.preprocessors = ["nbconvert.preprocessors.sanitize.SanitizeHTML"]
    c.HTMLExporter.filters = {"markdown2html": "labkit.course.inert.markdown2html"}
    c.SanitizeHTML.tags = sorted(SAFE_TAGS)
    return c
