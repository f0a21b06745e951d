import flordb as flor
i = 0
while i < epochs:
    with flor.iteration(name="epoch", idx=i) as it:
        loss = train()
    i += 1
