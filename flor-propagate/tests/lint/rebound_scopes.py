"""Rebinding is judged in the block's own scope; flordb may be imported
under any name, and the checkpointing block may be in a function or a
method."""
import flordb as fl
from flordb import checkpointing as ckpt
from flordb import loop


def other():
    w = 3  # another function's variable
    return w


class Trainer:
    def __init__(self, model):
        self.model = model
        self.steps = 0

    def fit(self):
        with fl.checkpointing(model=self.model):
            for epoch in fl.loop("epoch", range(2)):
                self.model = self.model + [epoch]  # expect: flor::rebound-checkpoint


def main():
    w = [0.0]
    with ckpt(w=w):
        for epoch in loop("epoch", range(3)):

            def helper():
                w = 5  # local to helper: fine
                return w

            helper()
            result = [w for w in range(3)]  # a comprehension's own variable: fine
            w = [v + 1 for v in w]  # expect: flor::rebound-checkpoint
            fl.log("result", len(result))


def plain_loop_only():
    w = [0.0]
    with fl.checkpointing(w=w):
        for i in range(3):
            w = [0.0]  # no flor loop in the block: nothing is checkpointed here


main()
