#!/bin/bash
# Compiled with shc at CREATE so students can run it without reading the token.
curl -s -H 'Authorization: Bearer {{ API_TOKEN }}' '{{ API_URL }}/login/{{ STUDENT }}'
