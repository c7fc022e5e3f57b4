"""Built-in networks, registered by name: `[model] factory = "resnet20"` (or `--model resnet20`)."""

MODELS = {
    "example-cnn": "hwprune.models.example_cnn:build",  # VGG-style, 5 convs: the default example
    "resnet20": "hwprune.models.resnet:build",  # CIFAR-style ResNet-20: residual adds couple channels
    "mobilenetv2": "hwprune.models.mobilenet_v2:build",  # depthwise convs, inverted residuals
    "lenet300": "hwprune.models.lenet:build",  # LeNet-300-100, fully connected: neurons are the channels
}


def resolve(factory: str) -> str:
    """A registered name → its "module:function"; anything else is returned unchanged."""
    return MODELS.get(factory, factory)
