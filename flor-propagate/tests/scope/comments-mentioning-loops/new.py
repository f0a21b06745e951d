import flordb as flor
# for epoch in flor.loop("fake", range(3)):
#         flor.log("fake", 1)
data = load()
        # for step in flor.loop("deeper_fake", data):
flor.log("rows", len(data))
for epoch in flor.loop("epoch", range(3)):  # flor.loop("other", x)
    # with flor.iteration("nope", 0):
    model.fit(data)
    flor.log("epoch", epoch)
