"""Training the AlgoFormer and its baselines on the paper's tasks (Section 5).

    prompts      decoder prompts for the tasks (generators in ``algoformer.tasks``)
    models       the three models: algoformer, standard (GPT-2), looped (Yang et al.)
    loss         the Eq. 3 loss over loops T0..T
    curriculum   Yang et al.'s schedule over dims, points, loops
    baselines    least squares, GD, Newton, zero: predictors with the models' call signature
    checkpoint   atomic checkpoints with RNG states (bit-exact resume)
    metrics      JSONL / CSV rows
    config       the run's configuration
"""
