"""Experiments built on the run machinery (cp_dist.training): the variants the paper compares, the
comparison over seeds and its statistics, the paper's tables, the CTR-backbone table, the recipe search,
the alignment diagnostics and what a served model costs to score."""
