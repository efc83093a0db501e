"""seqrec: sequential recommendation with honest full-ranking evaluation.

The one idea: the history is the query. Training learns ``score(history) -> scores over all
items``; evaluation, the CLI and serving all call that same function through
:class:`seqrec.recommend.Recommender`.
"""

__version__ = "0.1.0"
