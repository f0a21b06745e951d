"""Every way Python rebinds a name, and augmented assignments, which
rebind only immutable values."""
import flordb as flor

step = 0
params = [0.0, 0.0]
bias = (0.0,)
scale = 1.0
w, b = [1.0], [2.0]
log_file = None
history = []
best = float("inf")

with flor.checkpointing(step=step, params=params, bias=bias, scale=scale, w=w, b=b, log=log_file, history=history, best=best):
    for epoch in flor.loop("epoch", range(3)):
        step += 1  # expect: flor::rebound-checkpoint
        params += [0.0]  # a list extends in place: fine
        history.append(epoch)
        bias += (1.0,)  # expect: flor::rebound-checkpoint
        w, b = [x * 2 for x in w], [y for y in b]  # expect: flor::rebound-checkpoint, flor::rebound-checkpoint
        if (scale := scale * 0.9) < 0.5:  # expect: flor::rebound-checkpoint
            pass
        with open("/dev/null") as log_file:  # expect: flor::rebound-checkpoint
            pass
        for best in range(2):  # expect: flor::rebound-checkpoint
            pass
        flor.log("step", step)
