"""The HTML report (``reports/index.html``): one self-contained page, built by the ``report`` stage
from the files the pipeline wrote (:mod:`.sources`), the figures only the page draws
(:mod:`.figures`), sentences computed from the numbers (:mod:`.observations`) and a Jinja2
template (:mod:`.page`, ``templates/report.html.j2``)."""
