#!/bin/bash
# Prepare a bare 'remote' repository for $STUDENT.
set -eu
git init -q --bare "/srv/git/$STUDENT.git"
