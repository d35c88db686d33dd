"""Run constructed AlgoFormers against plain numpy algorithms and sweep the temperature.

    references   numpy GD / Newton-Schulz (the same signature as the emulators)
    emulate      run a Construction on the torch model, read iterates out of the token rows
    interface    the two kinds of entry: Algorithm (a temperature sweep) and Command (its own runner)
    registry     every entry by name: the builtins and the entry-point group verify.algorithms
    algorithms*  the builtin algorithms: problems, assumptions, score bounds, builders
    commands     the builtin commands (symbolic)
    sweep        the temperature schedule and the error rows
    report       table, verdict, JSON, plot
    cli          ``python -m verify``
"""
