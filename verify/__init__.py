"""Run constructed AlgoFormers against plain numpy algorithms and sweep the temperature.

    references   numpy GD / Newton-Schulz (the same signature as the emulators)
    emulate      run a Construction on the torch model, read iterates out of the token rows
    algorithms   per-algorithm problems, assumptions, score bounds, builders (one table)
    sweep        the temperature schedule and the error rows
    report       table, verdict, JSON, plot
    cli          ``python -m verify``
"""
