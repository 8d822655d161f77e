"""The jinja2 environment that renders every page (templates in ``templates/``)."""
import urllib.parse
from pathlib import Path

import jinja2

from .fmt import fmt, fmt_ratio, is_num
from .labels import as_text, label

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _href(path):
    return urllib.parse.quote(str(path))


def environment():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=fmt, ratio=fmt_ratio, href=_href, label=label,
                       text=as_text)
    env.tests["num"] = is_num
    return env


def render(template, **context):
    return environment().get_template(template).render(**context)
