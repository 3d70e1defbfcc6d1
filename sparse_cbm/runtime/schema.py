"""The base of every typed configuration section: unknown keys are errors, defaults are validated."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
