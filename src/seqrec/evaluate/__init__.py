"""Full-ranking evaluation: every item of the catalog is a candidate; seen items masked by default."""
