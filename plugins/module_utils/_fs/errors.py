# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one base of the errors this collection raises on purpose: a module reports them as its failure message."""


class ModelseedError(Exception):
    """An expected failure whose text tells the user what happened and what to do."""
