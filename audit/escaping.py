"""One escaping helper per output kind. Text from user data (class names, group values, paths, messages)
reaches five renderers, each with its own special characters; every view calls the helper of its renderer
and nothing else (a test greps for ad hoc ``html.escape`` / ``replace("<", ...)`` elsewhere).

==========================  ====================================================================
output                      helper
==========================  ====================================================================
HTML (reports, SVG)         :func:`html_text` (the Jinja templates autoescape with the same rules);
                            :func:`html_text_code` for messages whose `` `...` `` spans are commands
plotly labels               :func:`plot_text`; :func:`plot_no_markup` for a second, idempotent pass
Markdown files (reports,    :func:`markdown_text`; :func:`markdown_code` inside a code span;
gate summaries, PR posts)   :func:`markdown_text_code` for messages with `` `commands` ``
Streamlit markdown (app)    :func:`streamlit_markdown` (Streamlit also reads ``:colour[...]``,
                            ``:material/icon:`` and ``$math$``, so every punctuation mark is escaped);
                            :func:`streamlit_markdown_code` for messages whose `` `...` `` spans are
                            commands (shared with the CLI): those spans as code, the rest escaped
==========================  ====================================================================
"""
from __future__ import annotations

import html
import re


def html_text(text) -> str:
    """``text`` for HTML or SVG element content and attribute values: ``& < > " '`` as entities."""
    return html.escape(str(text), quote=True)


def html_text_code(text) -> str:
    """A message whose `` `...` `` spans are commands (written for the terminal too) as HTML: everything escaped
    by :func:`html_text`, each span in ``<code>`` (so the backticks never show literally). An unbalanced
    backtick leaves the text as plain escaped text."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:
        return html_text(text)
    return "".join(html_text(part) if i % 2 == 0 else f"<code>{html_text(part)}</code>" for i, part in enumerate(parts))


def plot_text(text) -> str:
    """``text`` for a plotly label (titles, tick labels, legend names): plotly.js renders a subset of HTML
    (``<b>``, ``<a href>``...), so ``& < >`` become entities and the text shows literally."""
    return html.escape(str(text), quote=False)


def plot_no_markup(text):
    """``text`` with ``<`` and ``>`` as entities, leaving ``&`` alone: idempotent on text already passed through
    :func:`plot_text`, so a figure can be escaped once more whatever built it; None stays None."""
    if text is None:
        return None
    return str(text).replace("<", "&lt;").replace(">", "&gt;")


#: Markdown punctuation escaped in user text: links and images (``[x](url)``, ``![x](url)``), emphasis,
#: code, table pipes (``_`` is left alone: GitHub Markdown ignores it inside words, and it is in every
#: metric name). ``<``/``>`` become entities (no HTML), ``@`` gets a zero-width space after it so a class
#: or group named ``@org/team`` does not notify anyone when the summary is posted on a pull request.
MARKDOWN_ESCAPED = "\\`*[]|~"


def markdown_text(text) -> str:
    """User text safe inside Markdown (and a table cell): no HTML tags, links, emphasis, pipes, mentions or
    line breaks."""
    text = " ".join(str(text).splitlines()) if "\n" in str(text) or "\r" in str(text) else str(text)
    text = "".join("\\" + c if c in MARKDOWN_ESCAPED else c for c in text)
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("@", "@\u200b")


def markdown_code(text) -> str:
    """User text inside a code span (`` `...` ``): escapes are not read there, so a backtick (which would end
    the span) becomes a quote and line breaks become spaces."""
    return " ".join(str(text).replace("`", "'").splitlines())


def markdown_text_code(text) -> str:
    """A message whose `` `...` `` spans are commands as Markdown: the spans as code spans
    (:func:`markdown_code`), the rest by :func:`markdown_text`; an unbalanced backtick escapes the whole text."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:
        return markdown_text(text)
    return "".join(markdown_text(part) if i % 2 == 0 else f"`{markdown_code(part)}`" for i, part in enumerate(parts))


_STREAMLIT_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def streamlit_markdown(text) -> str:
    """``text`` with every Markdown/Streamlit-directive character backslash-escaped (shown literally), for any
    user string that goes into ``st.markdown``/``st.write``/``st.caption``; HTML is never enabled."""
    return _STREAMLIT_SPECIAL.sub(r"\\\1", str(text))


def streamlit_markdown_code(text) -> str:
    """A message whose `` `...` `` spans are commands (written for the terminal too): each span shown as inline
    code, everything else escaped by :func:`streamlit_markdown` (so the backticks never show literally). An
    unbalanced backtick escapes the whole text."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:
        return streamlit_markdown(text)
    return "".join(streamlit_markdown(part) if i % 2 == 0 else f"`{part}`" for i, part in enumerate(parts))
