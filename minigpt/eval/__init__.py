"""Evaluation: any checkpoint's figures, and what a model of a given shape costs. Read in this order:

    loss.py        loss and bits per byte on text files and token shards
    choice.py      multiple choice, scored as llm.c scores HellaSwag; the chat variant (answer letters)
    builtin.py     a multiple-choice set made from the built-in corpus, so evaluation runs offline
    generative.py  sampled answers, a grader, pass@k (Chen et al.'s unbiased estimator), greedy accuracy
    cli.py         `minigpt eval`: all of the above, a table or JSON
    size.py        `minigpt size`: parameters, memory, KV cache, FLOPs, training time (GPT-2, Llama-2)
"""
