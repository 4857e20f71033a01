"""Revenue: daily MRR snapshots per customer, MRR movements, and the Revenue page.

A host feature built as an internal plugin (``plugin.py``). It knows no billing
system: plugins say which traits carry a customer's MRR and its currency
(``crowdpower_revenue_sources``), and the snapshot job reads those traits set-based.
It owns the ``mrr_*`` tables and the blueprint ``revenue``.
"""

from flask import Blueprint

bp = Blueprint("revenue", __name__, template_folder="templates")


def load_routes() -> None:
    """Attach the page and the API routes to ``bp`` (imported for their side effect)."""
    from crowdpower.revenue import views  # noqa: F401  (they import bp: a cycle)
