"""Domain errors. The CLI turns these into one clear line and a non-zero exit."""


class ChexbenchError(Exception):
    """Base class of every error a user can cause (bad input, bad config, missing files)."""


class ConfigError(ChexbenchError):
    """A grid or config file is invalid."""


class DataError(ChexbenchError):
    """A dataset root, label file or image is missing or malformed."""


class WeightsError(ChexbenchError):
    """Pretrained weights are missing or do not match the architecture."""


class SkipCell(ChexbenchError):
    """A cell cannot run here for a reason that is not a failure (e.g. no ImageNet weights)."""


class LeakageError(ChexbenchError):
    """Test patients would leak into training or pretraining."""


#: a note in a cell record (e.g. the protocol's ``head_notes``) that starts with this is a warning:
#: the cell ran, but a reader of its number must know something (listed in the report's "Warnings")
RECORD_WARNING_PREFIX = "warning: "
