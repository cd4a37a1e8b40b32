# Stage not built yet: no rules, no targets.


def embeddings_targets():
    return []
