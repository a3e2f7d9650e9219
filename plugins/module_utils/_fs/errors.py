# -*- coding: utf-8 -*-
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one base of the errors this collection raises on purpose: a module reports them as its failure message."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModelseedError(Exception):
    """An expected failure whose text tells the user what happened and what to do."""
