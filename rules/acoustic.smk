# Stage not built yet: no rules, no targets.


def acoustic_targets():
    return []
