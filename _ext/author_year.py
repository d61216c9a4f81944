"""The bibliography in the style of the citations: entries labelled "Duchi et al., 2011", as the
text cites them ({cite}`key` with bibtex_reference_style author_year), sorted by author and year.
Registered as the pybtex style "author_year"; _config.yml selects it with bibtex_default_style."""
from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _surnames(entry) -> str:
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [" ".join(p.prelast_names + p.last_names) for p in people]
    if len(names) > 2:
        return f"{names[0]} et al."
    return " and ".join(names) or entry.fields.get("title", entry.key)


class AuthorYearLabels(BaseLabelStyle):
    "Author-year labels, with a, b, … after the year where two entries would share one."

    def format_labels(self, sorted_entries):
        labels = [f"{_surnames(e)}, {e.fields.get('year', 'n.d.')}" for e in sorted_entries]
        for label in labels:
            if labels.count(label) > 1:
                raise ValueError(f"two bibliography entries would both be cited as {label!r}")
        return iter(labels)


class AuthorYearStyle(PlainStyle):
    default_label_style = "author_year"


# registered on import, before sphinxcontrib-bibtex looks the style up
register_plugin("pybtex.style.labels", "author_year", AuthorYearLabels)
register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
