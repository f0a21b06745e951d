import json
import sys


def main(path):
    with open(path) as f:
        config = json.load(f)
    for key, value in sorted(config.items()):
        print(f"{key} = {value}")


if __name__ == "__main__":
    main(sys.argv[1])
